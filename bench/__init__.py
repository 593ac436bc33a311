"""Benchmarks (not tests): each module is runnable with `python -m bench.<name>` and writes its
own section of docs/benchmarks.md. `make bench` runs `bench.e2e`; `make bench-duplicates` runs
`bench.duplicates`.
"""
