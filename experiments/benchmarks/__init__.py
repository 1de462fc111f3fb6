"""Speed and memory benchmarks: JAX vs PyTorch (compare_memory*, step_time, profile_step),
memory vs segments, the paper's table, and training / input-pipeline throughput."""
