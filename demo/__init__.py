"""The demo: its fleet, synthetic CTR data, the traffic simulator and the scenarios.

`python -m demo.run` (what `make demo` runs) drives the whole lifecycle through the real
daemon; `python -m demo.registry_walkthrough` walks the registry through the CLI. Modules are
used by name; the package itself exports nothing.
"""

__all__: list[str] = []
