"""Buffer policies: each answers ``wspipe_buffer_full``."""
