"""Client authentication: each answers ``wspipe_authenticate`` (and maybe ``wspipe_client_id``)."""
