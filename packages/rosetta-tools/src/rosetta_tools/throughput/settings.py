"""BenchConfig: everything one `rosetta bench` run measures, frozen, and the cases it expands to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rosetta_common import EncoderConfig
from rosetta_common.training import AdamWConfig
from rosetta_tools.throughput.impls import ALL, IMPLS
from rosetta_tools.throughput.torch_compile import CHOICES

DTYPES = ("float32", "bfloat16")
DEVICES = ("cpu", "cuda")
MODES = ("forward", "train")
TORCH_COMPILE = CHOICES  # see torch_compile.compile_settings


@dataclass(frozen=True)
class Case:
    """One input shape: batch x seq with a fraction of padded positions; or, with `lengths` (the lengths file's
    name), that file's sequences packed into batches of batch x seq rows and padded (`lengths.build_workload`)."""

    batch: int
    seq: int
    padding: float
    lengths: str | None = None

    @property
    def label(self) -> str:
        if self.lengths is not None:
            return f"B{self.batch}-S{self.seq}-lengths-{self.lengths}"
        return f"B{self.batch}-S{self.seq}-pad{self.padding:g}"


@dataclass(frozen=True)
class BenchConfig:
    """One run: a model, the cases, the implementations and how to time them."""

    preset: str
    model: EncoderConfig
    impls: tuple[str, ...]
    batch: int
    seq: int
    sweep_batch: tuple[int, ...] = ()
    sweep_seq: tuple[int, ...] = ()
    paddings: tuple[float, ...] = (0.0,)
    modes: tuple[str, ...] = MODES
    dtype: str = "float32"
    device: str = "cpu"
    tf32: bool = False
    torch_compile: str = "auto"
    repeats: int = 20
    rounds: int = 4
    warmup: int = 2
    lr: float = 1e-4
    seed: int = 0
    out_dir: Path = Path("results")
    lengths: Path | None = None  # a lengths file: the dense case batch x seq, then its packed / padded case
    padded_batch: int = 32  # sequences per padded batch in the lengths case
    lengths_batches: int = 1  # packed batches (of batch x seq) the lengths case fills

    @property
    def lengths_name(self) -> str | None:
        return None if self.lengths is None else self.lengths.stem

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"BenchConfig.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.device not in DEVICES:
            raise ValueError(f"BenchConfig.device must be one of {DEVICES}, got {self.device!r}")
        unknown = [m for m in self.modes if m not in MODES]
        if unknown or not self.modes:
            raise ValueError(f"BenchConfig.modes must be a non-empty subset of {MODES}, got {self.modes!r}")
        unknown = [name for name in self.impls if name not in IMPLS]
        if unknown or not self.impls:
            raise ValueError(f"BenchConfig.impls: unknown {unknown}; choose from {sorted(IMPLS)}")
        if self.torch_compile not in TORCH_COMPILE:
            raise ValueError(f"BenchConfig.torch_compile must be one of {TORCH_COMPILE}, got {self.torch_compile!r}")
        if self.lengths is not None and (self.sweep_batch or self.sweep_seq or self.paddings != (0.0,)):
            raise ValueError(
                "BenchConfig.lengths runs its own two cases (dense batch x seq, and the lengths file packed and "
                "padded): leave out sweep_seq, sweep_batch and padding"
            )
        for name, minimum in (
            ("repeats", 1),
            ("rounds", 1),
            ("warmup", 0),
            ("padded_batch", 1),
            ("lengths_batches", 1),
        ):
            if getattr(self, name) < minimum:
                raise ValueError(f"BenchConfig.{name} must be >= {minimum}, got {getattr(self, name)}")
        try:
            AdamWConfig(lr=self.lr)
        except ValueError as err:  # AdamWConfig names its own field
            raise ValueError(str(err).replace("AdamWConfig.lr", "BenchConfig.lr")) from err
        for case in self.cases:
            if not (case.batch >= 1 and 1 <= case.seq <= self.model.max_len and 0 <= case.padding < 1):
                raise ValueError(
                    f"BenchConfig case batch {case.batch} x seq {case.seq}, padding {case.padding}: need batch >= 1, "
                    f"1 <= seq <= max_len ({self.model.max_len}), 0 <= padding < 1"
                )

    @property
    def cases(self) -> tuple[Case, ...]:
        """(batch, seq), or the sweeps through it (seq swept at `batch`, batch swept at `seq`), per padding."""
        if self.lengths_name is not None:
            return (Case(self.batch, self.seq, 0.0), Case(self.batch, self.seq, 0.0, self.lengths_name))
        shapes = {(self.batch, s) for s in self.sweep_seq} | {(b, self.seq) for b in self.sweep_batch}
        return tuple(Case(b, s, p) for p in self.paddings for b, s in sorted(shapes or {(self.batch, self.seq)}))

    def skip_reason(self, impl: str, mode: str, case: Case | None = None) -> str | None:
        """Why implementation `impl` (a ceiling probe too) does not run in `mode` in this run (in `case`, when
        given), or None. Packed rows run in the lengths case only."""
        if ALL[impl].packed and (self.lengths is None or (case is not None and case.lengths is None)):
            return "packed rows run on the --lengths case only"
        return ALL[impl].skip_reason(mode, self.device, self.dtype, self.model)

    @property
    def adamw(self) -> AdamWConfig:
        """The training step's optimizer: AdamW with rosetta's defaults at this run's learning rate."""
        return AdamWConfig(lr=self.lr)

    @property
    def reps_per_round(self) -> int:
        """Timed calls per implementation in each round."""
        return max(1, -(-self.repeats // self.rounds))

    @property
    def precision(self) -> str:
        """What the matmuls run in: 'bfloat16', 'tf32' or 'float32'."""
        if self.dtype == "bfloat16":
            return "bfloat16"
        return "tf32" if self.device == "cuda" and self.tf32 else "float32"
