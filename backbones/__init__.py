"""Built-in backbone adapters, installed as mara_bench_backbones and registered via entry points."""
