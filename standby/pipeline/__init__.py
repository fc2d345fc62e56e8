"""The flywheel's control side: a state store beside the bus, the model registry, promotion."""
