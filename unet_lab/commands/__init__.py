"""One module per ``unet-lab`` command, each with a thin ``main(args)``; commands never import
each other (what two share lives in the package below them)."""
