"""Stage 4, delivery: STOW-RS and C-STORE with hard deadlines."""
