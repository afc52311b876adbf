"""Model families and training helpers shared by select, tune and train."""
