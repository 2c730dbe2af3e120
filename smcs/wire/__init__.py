"""The wire (layer 7): protobuf messages to and from the Structs of ``smcs.core`` and ``smcs.strategies``,
shared by the client and the server (``smcs.wire.convert``, ``smcs.wire.strategy``)."""
