"""The email channel: parsing hostile mail into plain data, with no database and no network."""
