"""What is on disk: where each artifact of each version lives (`layout`) and what was recorded (`manifest`)."""
