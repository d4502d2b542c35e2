"""From a map to text: attributes, descriptions, rubrics, VQA pairs, grounding, answer parsing, VLM client."""
