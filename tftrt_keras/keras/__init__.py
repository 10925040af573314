"""The Keras entry point: `TrtExport` (`callback`), validation-pass capture (`capture`), the SavedModel snapshot
(`snapshot`), and which Keras this is (`flavor`)."""
