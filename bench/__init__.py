"""Benchmarks: stord beside the raw backend doing the same work in the same run (`make bench`)."""
