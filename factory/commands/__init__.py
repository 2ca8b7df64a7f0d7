"""One module per command group; each module imports heavy libraries inside its commands."""
