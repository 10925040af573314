"""The offline entry point: the export pipeline on an existing SavedModel (`export_saved_model`; the
`tftrt-export` command's library half)."""
