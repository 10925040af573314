"""One export, from request to closed manifest: the trainer's half (`prepare`), the worker's request (`request`),
the queue of workers (`scheduler`), the worker process (`worker`, `worker_setup`), the worker's half (`run`),
and retention (`retention`)."""
