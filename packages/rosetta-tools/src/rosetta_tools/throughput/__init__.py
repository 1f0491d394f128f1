"""The throughput harness behind `rosetta bench`.

The parent process (`runner`) imports neither torch nor JAX: every implementation, the float64 reference and
each framework's matmul ceiling run in their own worker process (`worker`), and only one of them runs at a time.
"""
