"""One export, from request to closed manifest: the trainer's half (`prepare`), the worker's request (`request`),
the queue of workers (`scheduler`), the worker process (`worker`, `worker_setup`), the worker's half (`run`),
and retention (`retention`).

One noun each: an `ExportRequest` is what the trainer asks for (written to disk), a `ConversionWorker` the child
process that answers it, an `ExportRun` that process's progress through the steps (its manifest), and a
`formats.base.BuildJob` what a format may read while it builds a variant (all a plugin format sees)."""
