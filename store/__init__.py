"""The local SQLite replica of the corpus, with ranking and trust."""
