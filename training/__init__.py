"""Training: settings, the shared command line, batches, mining, loss, the trainer, run folders."""
