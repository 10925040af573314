"""One export, from request to closed manifest.

`prepare` (the trainer's half) writes an `ExportRequest`; `scheduler` queues `ConversionWorker`s (`worker`,
`worker_setup`), child processes whose progress is an `ExportRun` (`run`); a format sees only a
`formats.base.BuildJob`; `retention` deletes old exports.
"""
