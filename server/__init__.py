"""Stue: video consultations and end-to-end encrypted chat for municipal homecare."""
