"""Training: fetch -> store -> dataset -> adapt -> fine-tune -> evaluate -> export -> registry."""
