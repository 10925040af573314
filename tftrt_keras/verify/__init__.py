"""Is each variant still the model, and how fast is it: verification (`verification`), the report
(`report`), and the console summary (`summary`)."""
