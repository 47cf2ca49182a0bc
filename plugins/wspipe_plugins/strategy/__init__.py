"""Backend-selection strategies: each answers ``wspipe_select_backend``."""
