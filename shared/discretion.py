"""What a client's phone or calendar may show: the fellowship and recovery words that give away
what kind of meeting it is, found whatever their spelling.

A phone or a calendar may be shared, so unless the client opted in to full detail nothing sent
or handed to them names a fellowship or a drink, drug or recovery word. Notifications checks
every reminder with it (services/notifications/wording.py); the referral desk checks the
calendar file of a client's planned session (services/referrals/ics.py).
"""

from __future__ import annotations

import re
import unicodedata

# What a discreet message must never contain, in normalised form (lower case, unaccented, with
# spaces, dots, hyphens and slashes taken out), in three lists by how safely each can be looked for:
# - anywhere, even inside a longer word or across words ("Recoverycafe", "Sobriety1", "Al-Anon");
INDISCREET_ANYWHERE = (
    "alcohol", "narcotic", "cocaine", "anonymous", "alanon", "alateen", "gambler", "gambling", "marijuana",
    "cannabis", "overeater", "intergroup", "fellowship", "recover", "sobriety", "addict", "twelvestep",
    "12step", "bigbook", "heroin", "opiate", "opioid", "methadone", "substance", "relapse", "crystalmeth",
    "livingsober", "soberliving",
)
# - at the start of a word ("Sober-living", "drugs", "SMART"), not inside one (a "Drinkwater Road"
#   is left out too, better safe; "Methodist" must pass, so "meth" is in the last list);
INDISCREET_WORD_STARTS = ("sober", "drink", "drunk", "drug", "rehab", "detox", "smart", "booze", "crack")
# - as a whole word only, also when its letters are spaced or dotted out ("A.A.", "A A", "n/a"):
#   the fellowships' abbreviations ("CA1" is a Carlisle postcode, "1AA" ends many).
INDISCREET_WHOLE_WORDS = ("aa", "na", "ca", "cma", "ga", "oa", "ma", "fa", "aca", "meth")

# Letters from other scripts that look like Latin ones (a cheap subset of Unicode's confusables).
_LOOK_ALIKES = str.maketrans(
    "АВЕКМНОРСТУХЅІЈаеорсухѕіјԁһӏԛԝ" "ΑΒΕΖΗΙΚΜΝΟΡΤΥΧαεικνορτυχ" "øØłŁđĐıſ",
    "abekmhopctyxsijaeopcyxsijdhlqw" "abezhikmnoptyxaeiknoptux" "oollddis",
)
# Characters that join rather than separate: invisible ones, soft hyphens, apostrophes ("Mary's").
_JOINERS = re.compile("[\u00ad\u200b-\u200d\u2060\ufeff'\u2018\u2019\u02bc`\u00b4]")
_LONGEST_AT_WORD_START = max(len(w) for w in INDISCREET_WORD_STARTS + INDISCREET_WHOLE_WORDS)


def _words(text: str) -> list[str]:
    """Lower-case ASCII letter-and-digit runs, after folding width, look-alikes and accents."""
    text = unicodedata.normalize("NFKC", text).translate(_LOOK_ALIKES)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold()
    return re.findall(r"[a-z0-9]+", _JOINERS.sub("", text))


def plain_words(text: str) -> list[str]:
    """A client's text as plain lower-case ASCII words ("ＳＴＯＰ!!", "Stоp" with a Cyrillic o -> ["stop"])."""
    return _words(text)


def indiscreet_words(text: str) -> list[str]:
    """The fellowship and recovery words found in ``text`` (normalised), whatever their spelling."""
    words = _words(text)
    run_together = "".join(words)
    found = [w for w in INDISCREET_ANYWHERE if w in run_together]
    for i in range(len(words)):
        run = ""  # this word and the next ones run together: "A.A." -> "aa", "sob-er" -> "sober"
        for word in words[i:]:
            run += word
            if run in INDISCREET_WHOLE_WORDS:
                found.append(run)
            found.extend(w for w in INDISCREET_WORD_STARTS if run.startswith(w))
            if len(run) >= _LONGEST_AT_WORD_START:
                break
    return found
