"""The throughput harness behind `rosetta bench`.

The parent process (`runner`) imports neither torch nor JAX: every implementation, the float64 reference and
each framework's matmul ceiling run in their own worker process (`worker`), and only one of them runs at a time.
Rows whose framework package (rosetta_torch, rosetta_flax) is not installed are skipped, saying what to install;
the reference runs in whichever is installed. Results are typed records (`results`), written as JSON in one place
(`results_json`), shown as tables (`report`) and plots (`plots`).
"""
