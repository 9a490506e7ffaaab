"""Label masks for images of any size: `python predict.py ckpt_path=CKPT input=PATH output=DIR`."""

from unet_lab.commands.predict import main

if __name__ == "__main__":
    main()
