"""The counting path of EarthGPT-X: a small object detector whose counts the language model reads and copies.

- ``EarthGPTXCountingPath`` (the model's ``counting_path``): a centre head (``EarthGPTXCentreHead``) draws one
  heatmap of object centres per class on the mask decoder's pixel features; its local maxima
  (``centre_peaks``) are the objects. Their number per class, over the image and inside each prompt, becomes one
  *count token* per class (the class name's embedding plus the count's number embedding), which follows the image
  tokens and each prompt's tokens in the language model's input.
- ``EarthGPTXCountCopy`` (the model's ``count_copy``): a pointer from an answer's first position to those count
  tokens, mixing the count it points at into the next-token distribution through a learned gate (a copy
  mechanism, as in pointer-generator networks). ``count_sources`` finds the count tokens in a batch,
  ``copy_positions`` the positions the copy acts at, ``count_copy_loss`` supervises it in training, and
  ``CountCopyLogitsProcessor`` applies it in ``generate``.

Why ``generate`` still hooks the language model's final norm: the copy needs the prompt's last hidden states (the
count tokens' own) at the first new token, and a ``LogitsProcessor`` sees only ids and scores. Moving it into the
composite's own ``GenerationMixin`` loop needs a decoding forward (``inputs_embeds`` + ``past_key_values``) beside
the training ``forward``; that change is left for a pass whose held-out figures can be compared token for token.

The model has these parts only with ``count_classes`` > 0; see ``earthgptx/model/README.md``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LogitsProcessor
from transformers import initialization as init

from earthgptx.model.configuration_earthgptx import EarthGPTXConfig

# ---------------------------------------------------------------------------------------------------- detector
# The centre head's last bias starts at a 1 % centre probability (most pixel features hold no centre), the usual
# start of a focal-loss heatmap: the first gradients are then not swamped by the easy negatives.
CENTRE_PRIOR_BIAS = -4.6


class EarthGPTXCentreLogits(nn.Conv2d):
    """The centre head's last (1 × 1) layer; its bias starts at ``CENTRE_PRIOR_BIAS`` (set on the layer itself, so
    the initialisation order of the modules cannot undo it)."""

    def reset_custom_parameters(self) -> None:
        assert self.bias is not None
        init.constant_(self.bias, CENTRE_PRIOR_BIAS)


class EarthGPTXCentreHead(nn.Module):
    """The counting path's detector: ``(B, D, P, P)`` pixel features → ``(B, C, P, P)`` object-centre logits, a
    heatmap per class whose local maxima are the objects' centres."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        hidden = max(8, channels // 2)  # it runs on every pixel feature: narrow, so it costs little
        self.body = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.GELU(),
        )
        self.out = EarthGPTXCentreLogits(hidden, classes, 1)

    def forward(self, pixel_features: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(pixel_features))


PEAK_RULES = ("per_class", "across_classes")


def centre_peaks(
    logits: torch.Tensor, threshold: float, window: int = 3, rule: str = "per_class"
) -> torch.Tensor:
    """``(B, C, P, P)`` centre logits → the same shape, 1.0 at each detected object's centre, else 0.0: a cell whose
    centre probability is above ``threshold`` and is the maximum of its ``window`` × ``window`` neighbourhood (odd).

    ``rule`` says which neighbourhood: ``"per_class"`` compares a class's heat with that class's heat only, so two
    classes may both peak on one object; ``"across_classes"`` compares it with every class's heat (non-maximum
    suppression across classes, one class per object: the class that is surest there)."""
    if rule not in PEAK_RULES:
        raise ValueError(f"unknown peak rule {rule!r}; one of {PEAK_RULES}")
    heat = torch.sigmoid(logits.float())
    reference = heat if rule == "per_class" else heat.amax(1, keepdim=True)
    local_max = F.max_pool2d(reference, window, stride=1, padding=window // 2)
    return ((heat >= local_max) & (heat > threshold)).to(logits.dtype)


class CountingOutput(NamedTuple):
    """What the counting path gives for a batch: ``centre_logits`` ``(B, C, P, P)``; the count tokens
    ``image_count_tokens`` ``(B, C, H)`` (after the image tokens) and ``region_count_tokens`` ``(B, N, C, H)`` (after
    each prompt's tokens); the counts as weights over ``0..count_max``, ``count_mix`` ``(B, C, count_max + 1)`` and
    ``region_count_mix`` ``(B, N, C, count_max + 1)``."""

    centre_logits: torch.Tensor
    image_count_tokens: torch.Tensor
    region_count_tokens: torch.Tensor
    count_mix: torch.Tensor
    region_count_mix: torch.Tensor


class EarthGPTXCountingPath(nn.Module):
    """The detector and its count tokens: pixel features → centre heatmaps → peaks → per-class counts over the
    image and inside each prompt → one count token per class."""

    def __init__(self, config: EarthGPTXConfig) -> None:
        super().__init__()
        text_hidden = config.text_config.hidden_size
        self.count_max = config.count_max
        self.count_threshold = config.count_threshold
        self.count_window = config.count_window
        self.count_peaks = config.count_peaks
        self.count_head = EarthGPTXCentreHead(config.mask_decoder_hidden_size, config.count_classes)
        # The counts reach the language model as words: one token per class, the class's name plus the number
        # (model surgery starts both tables from the text embeddings of those words: init_count_tokens).
        self.count_numbers = nn.Embedding(config.count_max + 1, text_hidden)
        self.count_names = nn.Embedding(config.count_classes, text_hidden)

    def count_tokens(self, counts: torch.Tensor) -> torch.Tensor:
        """``(..., C)`` counts → ``(..., C, H)`` tokens, one per class: its name's embedding plus its count's number
        embedding (one token, so that a question's class finds its count in one look). A count between two whole
        numbers (a peak on a region's edge counts by the share of its cell inside) mixes the two numbers'
        embeddings; counts are clipped to ``[0, count_max]``."""
        table = self.count_numbers.weight
        return self.count_mix(counts).to(table.dtype) @ table + self.count_names.weight

    def count_mix(self, counts: torch.Tensor) -> torch.Tensor:
        """``(..., C)`` counts → ``(..., C, count_max + 1)`` weights over the numbers: a whole count is a one-hot,
        a fractional one splits between its two neighbours; counts are clipped to ``[0, count_max]``."""
        levels = torch.arange(self.count_max + 1, device=counts.device, dtype=torch.float32)
        clipped = counts.float().clamp(0.0, float(self.count_max)).unsqueeze(-1)
        return torch.relu(1.0 - (clipped - levels).abs())

    @staticmethod
    def region_counts(peaks: torch.Tensor, prompt_cover: torch.Tensor) -> torch.Tensor:
        """``(B, C, P, P)`` peaks, ``(B, N, P, P)`` share of each pixel-feature cell each prompt covers → ``(B, N, C)``:
        each prompt's count of every class, a peak weighted by the share of its cell the prompt covers."""
        return torch.bmm(prompt_cover.to(peaks.dtype).flatten(2), peaks.flatten(2).transpose(1, 2))

    def forward(
        self,
        pixel_features: torch.Tensor,
        prompt_cover: torch.Tensor,
        centre_maps: torch.Tensor | None = None,
    ) -> CountingOutput:
        """``pixel_features`` ``(B, D, P, P)`` (the mask decoder's); ``prompt_cover`` ``(B, N, P, P)``, the share of
        each pixel-feature cell each prompt covers; ``centre_maps`` ``(B, C, P, P)``, true object centres (1.0 in the
        cell of each), replaces the detected peaks (teacher forcing in training)."""
        # Outside autocast: on a CPU without bf16 hardware its convolutions at this size run ~30x slower in bf16.
        with torch.autocast(device_type=pixel_features.device.type, enabled=False):
            centre_logits = self.count_head(pixel_features.to(self.count_head.out.weight.dtype))
        if centre_maps is None:
            peaks = centre_peaks(
                centre_logits.detach(), self.count_threshold, self.count_window, self.count_peaks
            )
        else:
            if centre_maps.shape != centre_logits.shape:
                raise ValueError(
                    f"centre_maps has shape {tuple(centre_maps.shape)}, the centre head gives "
                    f"{tuple(centre_logits.shape)}"
                )
            peaks = centre_maps
        with torch.autocast(device_type=pixel_features.device.type, enabled=False):
            peaks = peaks.float()
            total_counts = peaks.sum((-2, -1))  # (B, C)
            region_counts = self.region_counts(peaks, prompt_cover)  # (B, N, C)
            return CountingOutput(
                centre_logits=centre_logits,
                image_count_tokens=self.count_tokens(total_counts),
                region_count_tokens=self.count_tokens(region_counts),
                count_mix=self.count_mix(total_counts),
                region_count_mix=self.count_mix(region_counts),
            )


# ---------------------------------------------------------------------------------------------------- count copy
class EarthGPTXCopyGate(nn.Linear):
    """The count copy's gate; its bias starts at ``COPY_GATE_BIAS`` (the copy starts nearly shut, so a model
    trained without it answers as before)."""

    def reset_custom_parameters(self) -> None:
        init.zeros_(self.weight)
        assert self.bias is not None
        init.constant_(self.bias, COPY_GATE_BIAS)


COPY_GATE_BIAS = -4.0


class CountCopyResult(NamedTuple):
    """What the count copy gives for ``B`` positions: ``log_probs`` ``(B, V)``, the mixed next-token
    log-probabilities; ``log_attention`` ``(B, S)``, the pointer's log-weights (those of the count tokens; about
    -1e9 elsewhere, finite, so that a loss on them has a gradient); ``gate_logit`` ``(B,)``."""

    log_probs: torch.Tensor
    log_attention: torch.Tensor
    gate_logit: torch.Tensor


_NOT_A_SOURCE = -1e9  # the pointer's score for a position that is not a count token
# The pointer scores a count token by the cosine of query and key times this: at most a gap of twice it between
# two count tokens, so the pointer can be sharp but never saturates past learning (an unbounded dot product did,
# in trial stages 11-12: gaps of hundreds, on the wrong class, that no gradient could move).
COPY_POINTER_SCALE = 16.0


class EarthGPTXCountCopy(nn.Module):
    """A pointer from the language model's answer to the counting path (a copy mechanism, as in pointer-generator
    networks): at an answer's first position the last hidden state attends over the count tokens (their own last
    hidden states as keys, scored by a scaled cosine, see ``COPY_POINTER_SCALE``), takes the counts they carry as a
    distribution over the numbers ``0..count_max``, and mixes it into the next-token distribution with a learned
    gate. The language model picks which count (which class, the whole image or which region) and whether to copy
    it; the detector supplies the number."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.query = nn.Linear(hidden, hidden, bias=False)
        self.key = nn.Linear(hidden, hidden, bias=False)
        self.gate = EarthGPTXCopyGate(hidden, 1)

    def forward(
        self,
        logits: torch.Tensor,
        hidden: torch.Tensor,
        source_hidden: torch.Tensor,
        source_mix: torch.Tensor,
        source_mask: torch.Tensor,
        number_ids: torch.Tensor,
    ) -> CountCopyResult:
        """``logits`` ``(B, V)`` and ``hidden`` ``(B, H)`` of one position per sample; the count tokens'
        ``source_hidden`` ``(B, S, H)``, ``source_mix`` ``(B, S, levels)`` and ``source_mask`` ``(B, S)`` bool;
        ``number_ids`` ``(levels,)`` the vocabulary ids of ``0..count_max`` → the log-probabilities of
        ``(1 - g) softmax(logits) + g copy``, the pointer and the gate logit. A sample without count tokens keeps
        ``log_softmax(logits)``."""
        with torch.autocast(device_type=logits.device.type, enabled=False):
            hidden, source_hidden = hidden.float(), source_hidden.float()
            query = F.normalize(self.query(hidden), dim=-1).unsqueeze(1)  # (B, 1, H)
            keys = F.normalize(self.key(source_hidden), dim=-1)
            scores = COPY_POINTER_SCALE * (query @ keys.transpose(1, 2)).squeeze(1)  # (B, S)
            log_attention = torch.log_softmax(scores.masked_fill(~source_mask, _NOT_A_SOURCE), dim=-1)
            attention = log_attention.exp() * source_mask  # (B, S); no source: all zero
            copy = (attention.unsqueeze(-1) * source_mix.float()).sum(1)  # (B, levels)
            gate_logit = self.gate(hidden).squeeze(-1)
            gate = (torch.sigmoid(gate_logit) * source_mask.any(-1).float()).unsqueeze(-1)
            probs = torch.softmax(logits.float(), dim=-1) * (1.0 - gate)
            probs = probs.index_add(-1, number_ids.to(probs.device), gate * copy)
            return CountCopyResult(torch.log(probs.clamp_min(1e-30)), log_attention, gate_logit)


class CountSources(NamedTuple):
    """Where the count tokens are in a batch's ``(B, L)`` ids: ``mix`` ``(B, L, count_max + 1)``, the count each
    carries (zero elsewhere); ``is_source`` ``(B, L)`` bool; ``key`` ``(B, L)``, which count each is (see
    ``count_source_key``; -1 elsewhere)."""

    mix: torch.Tensor
    is_source: torch.Tensor
    key: torch.Tensor


def count_source_key(class_index: int, region: int | None, classes: int) -> int:
    """The key of the count token of class ``class_index`` over the whole image (``region`` None) or inside prompt
    ``region`` (0-based): what ``count_targets`` holds for a counting question about that count."""
    if not 0 <= class_index < classes:
        raise ValueError(f"class index {class_index} is outside the counting path's {classes} classes")
    return int(_count_key(0 if region is None else region + 1, class_index, classes))


def _count_key(
    place: int | torch.Tensor, class_index: int | torch.Tensor, classes: int
) -> int | torch.Tensor:
    """Count-token keys, for ints or tensors alike: ``place`` 0 is the whole image, ``r + 1`` prompt ``r``."""
    return place * classes + class_index


def count_sources(
    config: EarthGPTXConfig,
    input_ids: torch.Tensor,
    count_mix: torch.Tensor,
    region_count_mix: torch.Tensor,
    region_slots: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> CountSources:
    """The count tokens' places in ``input_ids`` ``(B, L)``: the last ``count_tokens`` of the ``<image>`` ids
    (whole-image counts, class by class), and of each ``<regionI>`` occurrence's ``tokens_per_prompt`` ids (that
    prompt's counts). ``region_slots`` is the model's ``_region_slots(input_ids, answer_mask)``."""
    c, t, k = config.count_tokens, config.num_image_tokens, config.tokens_per_prompt
    batch, length = input_ids.shape
    values = count_mix.new_zeros(batch, length, count_mix.shape[-1])
    key = torch.full((batch, length), -1, dtype=torch.long, device=input_ids.device)
    image_positions = input_ids == config.image_token_id
    rank = image_positions.long().cumsum(1) - 1
    is_count = image_positions & (rank >= t - c)
    b, p = is_count.nonzero(as_tuple=True)
    values[b, p] = count_mix[b, rank[b, p] - (t - c)]
    key[b, p] = _count_key(0, rank[b, p] - (t - c), c)
    is_region, region_index, occurrence = region_slots
    slot = occurrence % k
    region_count = is_region & (slot >= k - c)
    b, p = region_count.nonzero(as_tuple=True)
    regions = region_index[b, p].clamp(max=region_count_mix.shape[1] - 1)
    values[b, p] = region_count_mix[b, regions, slot[b, p] - (k - c)]
    key[b, p] = _count_key(regions + 1, slot[b, p] - (k - c), c)
    return CountSources(values, is_count | region_count, key)


def copy_positions(
    input_ids: torch.Tensor,
    labels: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    ignore_index: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The positions the count copy acts at, as ``(samples, positions)``: the one that predicts each answer's
    first token (with ``labels``: the position before the first labelled one; samples without an answer are left
    out), or, without labels, each sample's last real position (the one that predicts what comes next)."""
    batch, length = input_ids.shape
    if labels is not None:
        answered = labels != ignore_index
        answered[:, 0] = False  # nothing predicts the first position
        samples = answered.any(-1).nonzero().flatten()
        first = answered.long().argmax(-1)
        return samples, first[samples] - 1
    samples = torch.arange(batch, device=input_ids.device)
    if attention_mask is None:
        return samples, input_ids.new_full((batch,), length - 1)
    return samples, attention_mask.long().cumsum(-1).argmax(-1)  # the last 1, for left or right padding


def count_copy_loss(
    result: CountCopyResult,
    sources: CountSources,
    samples: torch.Tensor,
    count_targets: torch.Tensor,
    weight: float,
) -> torch.Tensor:
    """The count copy's supervision, for the positions of ``samples``: ``count_targets`` ``(B,)`` holds the key of
    the count a counting question asks for (``count_source_key``), -1 for any other question. The pointer's
    cross-entropy on that count token (counting questions whose token is in the input) plus the gate's binary
    cross-entropy (open for a counting question, shut for any other), times ``weight``
    (``count_copy_loss_weight``)."""
    targets = count_targets.to(result.gate_logit.device)[samples]
    is_source, key = sources.is_source[samples], sources.key[samples]
    counting = targets >= 0
    match = is_source & (key == targets.unsqueeze(-1)) & counting.unsqueeze(-1)
    hit = match.any(-1)
    loss = result.gate_logit.sum() * 0.0  # keeps the graph when nothing below applies
    if bool(hit.any()):
        pointed = torch.logsumexp(result.log_attention.masked_fill(~match, float("-inf")), dim=-1)
        loss = loss - pointed[hit].mean()
    has_source = is_source.any(-1)
    if bool(has_source.any()):
        loss = loss + F.binary_cross_entropy_with_logits(
            result.gate_logit[has_source], counting[has_source].float()
        )
    return weight * loss


def count_number_tensor(config: EarthGPTXConfig, device: torch.device) -> torch.Tensor:
    """The vocabulary ids of ``0..count_max`` (``count_number_ids``), what the copy writes."""
    ids = config.count_number_ids
    if not ids or len(ids) != config.count_max + 1:
        raise ValueError("this model's counting path needs count_number_ids: the ids of 0..count_max")
    return torch.tensor(ids, device=device)


class CountCopyLogitsProcessor(LogitsProcessor):
    """Applies ``EarthGPTXCountCopy`` during ``generate``, to the first new token only (an answer's first position,
    as in ``forward``): a hook on the language model's final norm hands it the prompt's last hidden states, which
    include the count tokens' own."""

    def __init__(
        self, copy: EarthGPTXCountCopy, mix: torch.Tensor, is_source: torch.Tensor, number_ids: torch.Tensor
    ) -> None:
        self.copy, self.mix, self.is_source, self.number_ids = copy, mix, is_source, number_ids
        self.source_hidden: torch.Tensor | None = None
        self.applied = False

    def capture(self, module: nn.Module, args: object, output: torch.Tensor) -> None:
        if self.source_hidden is None:
            self.source_hidden = output

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.applied:
            return scores
        if self.source_hidden is None:
            raise RuntimeError("the count copy saw no hidden state (its hook is not on the final norm)")
        self.applied = True
        result = self.copy(
            scores, self.source_hidden[:, -1], self.source_hidden, self.mix, self.is_source, self.number_ids
        )
        return result.log_probs.to(scores.dtype)  # type: ignore[return-value]


__all__ = [
    "CENTRE_PRIOR_BIAS",
    "COPY_GATE_BIAS",
    "COPY_POINTER_SCALE",
    "CountCopyLogitsProcessor",
    "CountCopyResult",
    "CountSources",
    "CountingOutput",
    "EarthGPTXCentreHead",
    "EarthGPTXCountCopy",
    "EarthGPTXCountingPath",
    "PEAK_RULES",
    "centre_peaks",
    "copy_positions",
    "count_copy_loss",
    "count_number_tensor",
    "count_source_key",
    "count_sources",
]
