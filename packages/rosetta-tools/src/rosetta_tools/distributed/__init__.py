"""Training one framework on one device or on a mesh (`rosetta train --framework ... --parallel ...`): the engines'
set-up (torch's process group, JAX's devices), one session per framework, the loop and its files."""
