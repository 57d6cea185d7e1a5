"""BlipPaperModel: the paper's combined setup (§3-4) as one model. No Hugging Face class holds all three towers,
so this one takes them from a retrieval model and a captioning model built on one BlipConfig: one vision encoder
(`vision_model`, shared: one vision forward per batch), the retrieval side's text encoder, projections and
`itm_head`, and the captioning side's `text_decoder`. patch() puts adapters in all three towers at once and
save_adapters writes them to one file.

Adapter count against the paper's 48 (12 + 36, §3.3): BLIP-base has 12 vision blocks and three 12-block text
transformers in the paper's count (the unimodal text encoder for ITC, the image-grounded encoder for ITM, the
decoder). Hugging Face's BLIP runs the first two as one module (its text-only pass skips cross-attention), so
patch() adds 12 + 12 + 12 = 36 adapters here: the text encoder's 12 serve both the ITC and the ITM pass (BLIP's
two encoders share their weights too), where the paper's count lists them twice.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.blip import modeling_blip


class BlipPaperModel(nn.Module):
    def __init__(self, config=None, retrieval=None, captioning=None):
        """From a BlipConfig (random weights), or from a built BlipForImageTextRetrieval and
        BlipForConditionalGeneration (their vision encoders must have one shape; the retrieval one is kept)."""
        super().__init__()
        if retrieval is None:
            retrieval = modeling_blip.BlipForImageTextRetrieval(config)
            captioning = modeling_blip.BlipForConditionalGeneration(config)
        self.config = retrieval.config
        self.vision_model = retrieval.vision_model
        self.text_encoder = retrieval.text_encoder
        self.vision_proj, self.text_proj, self.itm_head = retrieval.vision_proj, retrieval.text_proj, retrieval.itm_head
        self.text_decoder = captioning.text_decoder

    @classmethod
    def from_pretrained(cls, retrieval_path, captioning_path):
        return cls(retrieval=modeling_blip.BlipForImageTextRetrieval.from_pretrained(retrieval_path),
                   captioning=modeling_blip.BlipForConditionalGeneration.from_pretrained(captioning_path))

    def caption_loss(self, image_embeds, input_ids, attention_mask, labels):
        """The decoder's LM loss on the shared image embeddings (labels as BlipForConditionalGeneration's)."""
        return self.text_decoder(input_ids=input_ids, attention_mask=attention_mask,
                                 encoder_hidden_states=image_embeds, labels=labels, reduction="mean").loss

    @torch.no_grad()
    def generate(self, pixel_values, input_ids=None, **generate_kwargs):
        """Captions as BlipForConditionalGeneration.generate makes them: the prompt's ids with BOS first, its
        trailing [SEP] dropped."""
        text = self.config.text_config
        image_embeds = self.vision_model(pixel_values=pixel_values).last_hidden_state
        if input_ids is None:
            input_ids = torch.full((pixel_values.shape[0], 2), text.bos_token_id, device=pixel_values.device)
        input_ids = input_ids.clone()
        input_ids[:, 0] = text.bos_token_id
        return self.text_decoder.generate(
            input_ids=input_ids[:, :-1], eos_token_id=text.sep_token_id, pad_token_id=text.pad_token_id,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device),
            **generate_kwargs)
