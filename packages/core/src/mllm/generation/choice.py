"""Closed-set answers: the likeliest of an item's choices (ties: the first listed).

When the choices' answer tokens differ in their first token (yes/no, option letters,
one-word answers), that token's log-probability at the end of the prompt decides: one
forward pass over the prompts, last position only, with the prompt-start caches
(:meth:`ChoiceScorer.scores_first_token`). Otherwise each choice's full log-likelihood
``log P(answer + end of turn | prompt)`` (the template's learned tokens) is computed,
still in one forward pass per batch: the prompt is followed by the tokens of all choices
laid out as a tree, with a 4-D attention mask (each choice sees the prompt and its own
earlier tokens, never another choice's) and position ids that continue the prompt's for
every choice (:meth:`ChoiceScorer.scores_tree`). With flash-attention, which takes no
custom masks, each choice becomes its own left-padded row instead
(:meth:`ChoiceScorer.scores_rows`), and so does a model whose adapter has
``uses_position_caches = False`` (its position ids are computed from each full row) or
per-image token counts (its images reach each row as ``image_inputs``).
"""

from __future__ import annotations

from typing import Any

from mllm.generation.decoding import left_pad
from mllm.generation.planning import Job
from mllm.generation.prefix_cache import PromptCaches


class ChoiceScorer:
    """Scores the choices of choice jobs with the engine's model and prompt caches."""

    def __init__(self, adapter: Any, caches: PromptCaches, batch_size: int) -> None:
        self.adapter = adapter
        self.caches = caches
        self.batch_size = batch_size

    def tree_masks_supported(self) -> bool:
        config = getattr(self.adapter.model, "config", None)
        implementation = str(getattr(getattr(config, "text_config", config), "_attn_implementation", "") or "")
        return "flash" not in implementation and self.caches.enabled

    def answers(self, jobs: list[Job]) -> list[str]:
        """The chosen choice's text per job."""
        if all(job.first_token_only for job in jobs):
            scores = self.scores_first_token(jobs)
        elif self.tree_masks_supported():
            scores = self.scores_tree(jobs)
        else:
            scores = self.scores_rows(jobs)
        answers = []
        for job, job_scores in zip(jobs, scores):
            best = max(range(len(job_scores)), key=lambda i: (job_scores[i], -i))
            answers.append(job.choices[best].text)
        return answers

    def scores_first_token(self, jobs: list[Job]) -> list[list[float]]:
        """``log P(first token of each choice | prompt)``: one pass over the prompts, last position only."""
        import torch

        ids, mask, past, images = self.caches.prompt_batch(jobs)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cached = jobs[0].cached
        kwargs: dict[str, Any] = dict(images)
        if past is not None:
            kwargs.update(past_key_values=past, use_cache=True)
        else:
            kwargs["use_cache"] = False
        output = self.adapter.model(input_ids=ids[:, cached:], attention_mask=mask, position_ids=positions[:, cached:],
                                    logits_to_keep=1, **kwargs)
        logprobs = torch.log_softmax(output.logits[:, -1].float(), dim=-1)
        return [logprobs[row, [c.tokens[0] for c in job.choices]].tolist() for row, job in enumerate(jobs)]

    def scores_tree(self, jobs: list[Job]) -> list[list[float]]:
        """Every choice's full log-likelihood, all choices of a batch in one forward pass.

        Row layout: ``[left padding | prompt | choice 1 tokens | choice 2 tokens | ... | right padding]``,
        where choice ``c`` contributes its continuation tokens except the last (the
        last one is only predicted). A 4-D mask lets each choice token see the prompt
        and the earlier tokens of its own choice; its position id continues the
        prompt's. The prompt ends at the same column in every row, so one slice of the
        logits holds every prediction needed.
        """
        import torch

        device = self.caches.device
        prompt_width = max(len(job.prefix) for job in jobs)
        tails = [[token for choice in job.choices for token in choice.tokens[:-1]] for job in jobs]
        tail_width = max(len(tail) for tail in tails)
        width = prompt_width + tail_width
        pad = self.adapter.pad_token_id
        id_rows, position_rows = [], []
        allowed = torch.zeros((len(jobs), width, width), dtype=torch.bool)
        causal = torch.ones((width, width), dtype=torch.bool).tril()
        for row, (job, tail) in enumerate(zip(jobs, tails)):
            n_prompt = len(job.prefix)
            start = prompt_width - n_prompt
            id_rows.append([pad] * start + job.prefix + tail + [pad] * (tail_width - len(tail)))
            positions = [0] * start + list(range(n_prompt))
            allowed[row, start:prompt_width, start:prompt_width] = causal[:n_prompt, :n_prompt]
            column = prompt_width
            for choice in job.choices:
                n = len(choice.tokens) - 1
                if n <= 0:
                    continue
                positions.extend(range(n_prompt, n_prompt + n))
                allowed[row, column:column + n, start:prompt_width] = True
                allowed[row, column:column + n, column:column + n] = causal[:n, :n]
                column += n
            position_rows.append(positions + [0] * (width - len(positions)))
        # padding attends to itself only (keeps its softmax well defined; nobody reads it)
        lonely = ~allowed.any(-1)
        allowed |= torch.diag_embed(lonely)
        dtype = next(self.adapter.model.parameters()).dtype
        mask = torch.zeros((len(jobs), 1, width, width), dtype=dtype)
        mask.masked_fill_(~allowed.unsqueeze(1), torch.finfo(dtype).min)
        kwargs: dict[str, Any] = self.caches.image_kwargs(jobs)
        keep = width - prompt_width + 1  # the last prompt position and every tail position
        output = self.adapter.model(input_ids=torch.tensor(id_rows, device=device), attention_mask=mask.to(device),
                                    position_ids=torch.tensor(position_rows, device=device), logits_to_keep=keep,
                                    use_cache=False, **kwargs)
        logprobs = torch.log_softmax(output.logits.float(), dim=-1)  # [batch, keep, vocab]; column 0: prompt end
        scores = []
        for row, job in enumerate(jobs):
            columns, tokens, owners = [], [], []
            offset = 1  # logits column of the current choice's first tail token
            for index, choice in enumerate(job.choices):
                for j, (token, learned) in enumerate(zip(choice.tokens, choice.learned)):
                    if learned:  # token j is predicted by the prompt end (j == 0) or by token j-1
                        columns.append(0 if j == 0 else offset + j - 1)
                        tokens.append(token)
                        owners.append(index)
                offset += max(len(choice.tokens) - 1, 0)
            picked = logprobs[row, columns, tokens].tolist()
            row_scores = [0.0] * len(job.choices)
            for owner, value in zip(owners, picked):
                row_scores[owner] += value
            scores.append(row_scores)
        return scores

    def scores_rows(self, jobs: list[Job]) -> list[list[float]]:
        """Fallback for attention kernels without custom masks: one row per (item, choice)."""
        import torch

        rows, owners = [], []
        for index, job in enumerate(jobs):
            for choice in job.choices:
                rows.append(job.prefix + choice.tokens)
                owners.append((index, choice))
        scores: list[list[float]] = [[] for _ in jobs]
        for start in range(0, len(rows), self.batch_size):
            chunk, chunk_owners = rows[start:start + self.batch_size], owners[start:start + self.batch_size]
            ids, mask = left_pad(chunk, self.adapter.pad_token_id, self.caches.device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            kwargs: dict[str, Any] = self.caches.image_kwargs([jobs[index] for index, _ in chunk_owners])
            output = self.adapter.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                        use_cache=False, **kwargs)
            logprobs = torch.log_softmax(output.logits.float(), dim=-1)
            width = ids.shape[1]
            for row, (index, choice) in enumerate(chunk_owners):
                n = len(choice.tokens)
                total = 0.0
                for j, (token, learned) in enumerate(zip(choice.tokens, choice.learned)):
                    if learned:
                        total += float(logprobs[row, width - n - 1 + j, token])
                scores[index].append(total)
        return scores
