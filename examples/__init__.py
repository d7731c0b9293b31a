"""Example statestream apps; each runs unchanged on the embedded log and on Kafka."""
