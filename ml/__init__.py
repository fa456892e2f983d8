"""The model half of the pipeline: fine-tune GPT-2 with gpt_2_simple and write candidate tweets to curate."""
