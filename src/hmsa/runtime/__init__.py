"""Where and how computation runs: device, precision and memory layout; torchrun and
DDP ranks; process pools."""
