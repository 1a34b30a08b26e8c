"""Small stdlib jobs that speak the job protocol; presets use them."""
