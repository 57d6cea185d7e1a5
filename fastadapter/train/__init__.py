"""The BLIP fine-tuning system: an image-caption folder (data.py), BLIP's objectives for Hugging Face models
(objectives.py) and the built-in synthetic set (synthetic.py). Imported on demand (`import fastadapter` does not
load it, nor the packages only training needs)."""
