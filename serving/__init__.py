"""The serving plane: Triton, Ray Serve and vLLM backends, the gateway, the prediction log
and the deployment controller. It imports `modelops`; nothing in `modelops` imports it."""
