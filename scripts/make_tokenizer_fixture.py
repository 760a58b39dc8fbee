#!/usr/bin/python3
"""Reference encodings for test/tokenizer.test.ts, made with the real SentencePiece (Debian's python3-sentencepiece).

Writes test/fixtures/tokenizer/{mistral,tok512,nfkc}.json: {"model": ..., "entries": [{text, ids, pieces, decoded,
...}]} with ids without BOS. For Mistral it also records Hugging Face `tokenizers` encodings of tokenizer.json
(hf_ids: special tokens not parsed; hf_special_ids: parsed) when that package is importable, e.g. from an unpacked
wheel via PYTHONPATH. nfkc.json comes with a small BPE model trained here with the nmt_nfkc normalizer (precompiled
charsmap), a user-defined and a control symbol, so those code paths are checked against SentencePiece too.

Usage: /usr/bin/python3 scripts/make_tokenizer_fixture.py [--shared ../shared]
"""
import argparse
import csv
import io
import json
import os
import re
import sys

import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, 'test', 'fixtures', 'tokenizer')

HANDWRITTEN = [
    '', ' ', '  ', '   ', '\t', '\n', '\n\n', ' \t \n ', 'a', ' a', '  a', 'a ', 'a  ', '  leading and trailing  ',
    'multiple     spaces   inside', 'tab\tseparated\tvalues', 'line one\nline two\r\nline three', '\u2581', '\u2581a \u2581\u2581b',
    'Hello world', 'Hello, world! How are you today?', "It's a dog's life; isn't it?", 'The quick brown fox jumps over the lazy dog.',
    'ALL CAPS SENTENCE', 'camelCaseIdentifier snake_case_name kebab-case-name', 'https://example.com/path?q=1&r=2#frag',
    'email@example.com', 'C:\\Users\\name\\file.txt', 'def f(x):\n    return x ** 2\n',
    '0', '7', '42', '1234567890', '3.14159', '-273.15', '1,000,000', '2024-06-01', '10:30 PM', '$19.99', '50%', '1st 2nd 3rd 4th',
    '안녕하세요', '안녕하세요, 만나서 반갑습니다.', '오늘 날씨가 정말 좋네요!', '12시 땡!', '하루가 또 가네요.',
    '1지망 학교 떨어졌어', '위로해 드립니다.', '3박4일 놀러가고 싶다', '여행은 언제나 좋죠.', 'SNS 시간낭비인 거 아는데 매일 하는 중',
    '12시 땡!,하루가 또 가네요.,0', '"따옴표, 쉼표" 포함,네 알겠어요.,1', '힣 똠 뷁 햏 꿻', 'ㄱㄴㄷ ㅏㅑㅓ', '한국어와 English 섞어서 쓰기',
    '日本語のテキストです。', '中文文本测试', '繁體中文測試', 'Привет, мир!', 'مرحبا بالعالم', 'שלום עולם', 'नमस्ते दुनिया', 'สวัสดีชาวโลก',
    'Ελληνικά κείμενα', 'Hello 世界 안녕 мир مرحبا 🌍', 'naïve café résumé', 'e\u0301 decomposed vs \u00e9 composed', 'Straße', 'ﬁ ligature ﬂ',
    'ＡＢＣ　ｆｕｌｌｗｉｄｔｈ　１２３', '①②③ ⅷ ㎏ ㈜', 'a\u00a0b non-breaking', 'zero\u200bwidth', 'soft\u00adhyphen',
    '😀', '👍🏽', '👨\u200d👩\u200d👧\u200d👦', '🏳️\u200d🌈', '🇰🇷🇺🇸', '❤️', 'I love it 😍😍😍!', '🤖 robots 🦾',
    '𠜎𠜱𠝹𠱓', '龘 靐 齉', '𝔘𝔫𝔦𝔠𝔬𝔡𝔢', '\U0001F9D1\u200d\U0001F4BB coding', '𓀀 hieroglyph', '\u0001\u0002 control chars', '\x7f',
    '<s>', '</s>', '<unk>', '<s>Hello</s>', 'a <s> b', ' <s> leading space', '<s> [INST] 안녕하세요 [/INST]', '[INST] hi [/INST]</s>',
    'text with <s> inside and </s> at end', '<<s>>', '<s><s></s>', '<sep> user <sep>', '<ctrl> not a control',
    # Long runs without spaces: one BPE chunk of thousands of symbols.
    'ㅋ' * 2000, '=' * 1000, 'ha' * 1000, '가나다라마바사' * 300, ' ' * 300, '▁' * 50 + 'x',
]


def sample_lines(shared):
    """~300 real lines: ChatbotData Q/A rows and fields, wiki.test.raw lines (with their leading spaces), TinyStories."""
    out = []
    with open(os.path.join(shared, 'datasets', 'ChatbotData.csv'), encoding='utf-8') as f:
        raw = f.read().splitlines()
    rows = list(csv.reader(io.StringIO('\n'.join(raw))))[1:]
    step = max(1, len(rows) // 50)
    for i in range(0, len(rows), step)[:50]:
        out.append(raw[i + 1])               # the CSV line as written
        out.append(rows[i][0])               # question
        out.append(rows[i][1])               # answer
    with open(os.path.join(shared, 'datasets', 'wiki.test.raw'), encoding='utf-8') as f:
        wiki = [l for l in f.read().split('\n') if l.strip()]
    step = max(1, len(wiki) // 75)
    out += [wiki[i][:600] for i in range(0, len(wiki), step)][:75]
    with open(os.path.join(shared, 'datasets', 'tinystories_val_slice.txt'), encoding='utf-8') as f:
        stories = [l for l in f.read().split('\n') if l.strip()]
    step = max(1, len(stories) // 75)
    out += [stories[i][:600] for i in range(0, len(stories), step)][:75]
    return out


def special_split(text, specials):
    """Segments between special tokens, as the .model loader encodes them with parseSpecial."""
    pattern = '(' + '|'.join(re.escape(s) for s in sorted(specials, key=len, reverse=True)) + ')'
    return [p for p in re.split(pattern, text) if p]


def entries_for(sp, texts, hf=None):
    specials = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)]
    out = []
    for text in texts:
        ids = sp.encode(text)
        e = {'text': text, 'ids': ids, 'pieces': [sp.id_to_piece(i) for i in ids], 'decoded': sp.decode(ids)}
        if any(s in text for s in specials):
            sids = []
            for seg in special_split(text, specials):
                sids += [sp.piece_to_id(seg)] if seg in specials else sp.encode(seg)
            e['special_ids'] = sids
        if hf is not None:
            hf.encode_special_tokens = True
            e['hf_ids'] = hf.encode(text, add_special_tokens=False).ids
            e['hf_decoded'] = hf.decode(e['hf_ids'], skip_special_tokens=False)
            hf.encode_special_tokens = False
            e['hf_special_ids'] = hf.encode(text, add_special_tokens=False).ids
        out.append(e)
    return out


def train_nfkc_model(shared, prefix):
    """A small real BPE model with the nmt_nfkc charsmap, a user-defined and a control symbol."""
    lines = []
    with open(os.path.join(shared, 'datasets', 'tinyshakespeare_input.txt'), encoding='utf-8') as f:
        lines += f.read().split('\n')[:4000]
    with open(os.path.join(shared, 'datasets', 'ChatbotData.csv'), encoding='utf-8') as f:
        lines += f.read().split('\n')[1:3000]
    lines += ['ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ １２３ ① ㎏ ﬁ'] * 20
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([l for l in lines if l.strip()]), model_prefix=prefix, model_type='bpe', vocab_size=1500,
        normalization_rule_name='nmt_nfkc', byte_fallback=True, character_coverage=0.99, num_threads=1,
        user_defined_symbols=['<sep>', '🤗'], control_symbols=['<ctrl>'], minloglevel=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--shared', default=os.path.join(ROOT, '..', 'shared'))
    args = ap.parse_args()
    shared = os.path.abspath(args.shared)
    os.makedirs(OUT, exist_ok=True)
    texts = HANDWRITTEN + sample_lines(shared)

    try:
        import tokenizers  # optional: the HF reference for tokenizer.json
        hf = tokenizers.Tokenizer.from_file(os.path.join(shared, 'tokenizers', 'mistral-7b-v0.1', 'tokenizer.json'))
        hf_version = tokenizers.__version__
    except ImportError:
        print('warning: tokenizers not importable; mistral.json gets no hf_ids', file=sys.stderr)
        hf, hf_version = None, None

    jobs = [
        ('mistral', os.path.join(shared, 'tokenizers', 'mistral-7b-v0.1', 'tokenizer.model'), hf),
        ('tok512', os.path.join(shared, 'models', 'stories260K', 'tok512.model'), None),
    ]
    nfkc_prefix = os.path.join(OUT, 'nfkc-bpe')
    train_nfkc_model(shared, nfkc_prefix)
    os.remove(nfkc_prefix + '.vocab')
    jobs.append(('nfkc', nfkc_prefix + '.model', None))

    for name, model, hf_tok in jobs:
        sp = spm.SentencePieceProcessor(model_file=model)
        doc = {
            'generator': 'scripts/make_tokenizer_fixture.py',
            'sentencepiece': spm.__version__,
            'tokenizers': hf_version if hf_tok is not None else None,
            'model': os.path.relpath(model, ROOT),
            'entries': entries_for(sp, texts, hf_tok),
        }
        path = os.path.join(OUT, name + '.json')
        entries = doc.pop('entries')
        with open(path + '.tmp', 'w', encoding='utf-8') as f:  # one entry per line keeps diffs readable
            head = json.dumps(doc, ensure_ascii=False)
            f.write(head[:-1] + ', "entries": [\n')
            f.write(',\n'.join(json.dumps(e, ensure_ascii=False, separators=(',', ':')) for e in entries))
            f.write('\n]}\n')
        doc['entries'] = entries
        os.replace(path + '.tmp', path)
        print(f'{path}: {len(doc["entries"])} entries')


if __name__ == '__main__':
    main()
