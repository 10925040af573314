"""The Estimator entry point: `TrtExporter` (`exporter`) and the evaluation hook that captures samples
(`calibration`)."""
