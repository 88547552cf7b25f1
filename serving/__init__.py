"""The serving plane: Triton, Ray Serve and vLLM backends, the gateway, the prediction log
and the deployment controller. It imports `modelops`; nothing in `modelops` imports it.

Its subpackages (`gateway`, `triton`, `predlog`, `controller`) each state their own public
names; this package re-exports none, so importing one plane never loads another."""

__all__: list[str] = []
