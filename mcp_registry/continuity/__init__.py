"""Session continuity: a legacy session is served by the worker that owns it, wherever its requests land.

- `sealed_id`: session ids that name their owner under the deployment's MAC (pure);
- `hop_auth`: the signed, replay-proof header of a forwarded request (pure);
- `address`: listen and advertise addresses (pure); `hop`: what a hop reports (pure);
- `forwarder`: the client side of a hop (aiohttp, pooled, streaming);
- `listener`: the owner side, an internal uvicorn listener per worker;
- `node`: one worker's part in all of it, run inside the app's lifespan.
"""
