#!/usr/bin/env python
"""Write CLIP text embeddings of class names: FILE.npy (C, D float32) + FILE.names.json.

    tools/dump_text_embeddings.py --clip CLIP (--names a,b,c | --dataset NAME) --out FILE.npy

`--help` lists the options and examples; the command line is ezsd.clip.text_cli.
"""

from detectron2.utils.logger import setup_logger

from ezsd.clip.text_cli import main

if __name__ == "__main__":
    # here, not in main(): tests call main() in-process
    setup_logger(name="ezsd", abbrev_name="ezsd")
    main()
