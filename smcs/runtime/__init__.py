"""The runtime (layer 6): ``smcs.runtime.host.StepHost`` drives every step machine of ``smcs.core`` and
``smcs.strategies`` (SMCS included) against real models, an embedder and a route function, in-process
(``smcs.runtime.local``) or in the server (``smcs.service``)."""
