"""Getting questions and outcomes into banks (layer 4): ``smcs.ingest.importers`` reads published capability
data, ``smcs.ingest.builder`` asks models and grades their answers. Both write through ``smcs.bank``."""
