"""Xiajiao benchmarks: ``python -m bench`` (full) or ``python -m bench --smoke`` (tiny sizes).

The real server runs as a subprocess (``python -m xiajiao.cli serve``) on a free port with its
data folder in a temporary directory; the fake OpenAI-compatible model runs in a second
subprocess; the load generator is this process. Results are printed as a table and written to
``bench/results/<date>.json``. See docs/benchmarks.md.
"""
