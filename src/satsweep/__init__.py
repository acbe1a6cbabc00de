"""satsweep."""
