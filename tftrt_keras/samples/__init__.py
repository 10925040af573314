"""Samples shared by every entry point: bounded uniform capture (`reservoir`), the samples files
(`calibration_data`), and the split into calibration and verification (`holdout`)."""
