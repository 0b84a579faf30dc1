"""One module per page: the kinds, one kind, the listing, one action, the controls."""
