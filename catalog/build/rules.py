"""The builder's reviewed tables: source files and their priority, words that are not
names, links and merges known to be wrong, and the vocabularies of facts.

Reads and writes nothing. Editing a table here changes the next ``atelier catalog
build``; the rebuild test then shows the change in ``styles.csv``.
"""

from __future__ import annotations

# Short source names, in priority order: the first is trusted most for names and facts
# (the style-studies sheet is curated by hand; WikiArt slugs have lost case and accents).
SOURCES = (
    "sdxl-studies",
    "sd15-cheatsheet",
    "sd15-excluded",
    "clip-interrogator",
    "wikiart",
)
SOURCE_FILES = {
    "sdxl-studies": "sdxl-style-studies-artists.csv",
    "sd15-cheatsheet": "sd15-cheatsheet-artists.json",
    "sd15-excluded": "sd15-cheatsheet-excluded.json",
    "clip-interrogator": "clip-interrogator-artists.txt",
    "wikiart": "wikiart-artist-styles.csv",
}
MOVEMENTS_FILE = "clip-interrogator-movements.txt"
MEDIUMS_FILE = "clip-interrogator-mediums.txt"
PRIORITY = {name: index for index, name in enumerate(SOURCES)}

# The SD 1.5 cheat sheet's exclusion codes -> recognized_sd1. 404 (not known), 304
# (something unrelated recognized) and 301 (results too different) mean the model does
# not render the artist: "no". 205 (recognized but hard to prompt), 204 (recognized but
# generic) and 500 (other problems, e.g. no safe-for-work images) mean some knowledge
# without a usable style: "unsure".
EXCLUSION_CODES = {
    "404": ("no", "not known"),
    "304": ("no", "something unrelated recognized"),
    "301": ("no", "results too different"),
    "205": ("unsure", "recognized but hard to prompt"),
    "204": ("unsure", "recognized but generic"),
    "500": ("unsure", "other problem"),
}
# Sources date from 2023-2024. A cheat-sheet artist with a birth year and no death year
# counts as living only if born after this year: an 1850 birth without a death year is a
# gap in the sheet, not a 174-year-old painter. Fixed (not today's year) so rebuilds are
# identical.
LIVING_IF_BORN_AFTER = 1915

# Lines whose every word is one of these are job titles, not names ("senior artist").
GENERIC_WORDS = frozenset(
    {"artist", "artists", "senior", "junior", "lead", "principal", "character", "environment",
     "concept", "illustrator", "painter", "designer", "art", "style", "unknown", "anonymous",
     "various", "trending", "artstation", "deviantart", "behance"}
)
# Names that are not artists, with the reason reported when they are dropped.
NON_ARTISTS = {
    "national geographic": "a magazine, not an artist",
}
# Links in the sources known to be wrong, refused with the reason given. The style-studies
# sheet has notes that belong to a neighbouring row: Giorgione is "Giorgio Barbarelli da
# Castelfranco", not Ron Arad nor Ralph Bakshi; Michael Cheval is a painter of his own.
REJECTED_LINKS = {
    ("ron arad", "giorgione"): "note belongs to another row (Giorgione)",
    ("ralph bakshi", "giorgio barbarelli da castelfranco"): "note belongs to another row (Giorgione)",
    ("michael cheval", "alexander fedosov"): "note belongs to another row",
}

# Pairs of names that the heuristics would join but that are two people (family
# members, namesakes); every heuristic merge is listed by `atelier catalog build --report`
# for review, and a wrong one is recorded here.
DISTINCT_PEOPLE = {
    ("john alexander", "john white alexander"): "John Alexander (b. 1945) is not John White Alexander (1856-1915)",
    ("arthur boyd", "arthur merric boyd"): "Arthur Boyd is the grandson of Arthur Merric Boyd",
    ("william scott", "william edouard scott"): "the Scottish painter is not the American one",
    ("alexander calder", "alexander milne calder"): "grandson and grandfather",
    ("alexander calder", "alexander stirling calder"): "son and father",
}

# Danbooru tag -> catalog artist_id merges that the matching keys would make but that
# are two people (reviewed in `atelier catalog build --report`), with the reason.
REJECTED_TAG_MERGES: dict[tuple[str, str], str] = {}

# Cheat-sheet categories: countries give nationality, the rest mediums, movements or tags.
COUNTRY_NAMES = {
    "usa": "USA", "american": "USA", "uk": "UK", "england": "UK", "scotland": "Scotland",
    "wales": "Wales", "ireland": "Ireland", "france": "France", "germany": "Germany",
    "japan": "Japan", "italy": "Italy", "netherlands": "Netherlands", "canada": "Canada",
    "russia": "Russia", "poland": "Poland", "australia": "Australia", "austria": "Austria",
    "spain": "Spain", "switzerland": "Switzerland", "belgium": "Belgium", "sweden": "Sweden",
    "brazil": "Brazil", "china": "China", "denmark": "Denmark", "israel": "Israel",
    "ukraine": "Ukraine", "belarus": "Belarus", "norway": "Norway", "czech republic": "Czech Republic",
    "mexico": "Mexico", "philippines": "Philippines", "south korea": "South Korea",
    "lithuania": "Lithuania", "romania": "Romania", "argentina": "Argentina", "taiwan": "Taiwan",
    "bulgaria": "Bulgaria", "portugal": "Portugal", "hungary": "Hungary", "finland": "Finland",
    "lebanese": "Lebanon", "lebanon": "Lebanon", "crimea": "Crimea", "iran": "Iran",
    "uruguay": "Uruguay", "slovakia": "Slovakia", "haiti": "Haiti", "palestine": "Palestine",
    "colombia": "Colombia", "nigeria": "Nigeria", "greece": "Greece", "guernsey": "Guernsey",
    "new zealand": "New Zealand", "egypt": "Egypt", "cocos islands": "Cocos Islands",
    "latvia": "Latvia", "singapore": "Singapore", "vietnam": "Vietnam", "iraq": "Iraq",
    "guatemala": "Guatemala", "south africa": "South Africa", "india": "India",
    "albania": "Albania", "costa rica": "Costa Rica", "estonia": "Estonia", "croatia": "Croatia",
    "serbia": "Serbia", "armenia": "Armenia", "puerto rico": "Puerto Rico", "turkey": "Turkey",
    "peru": "Peru", "flemish": "Flanders",
}
# Medium words (from cheat-sheet categories and style-studies tags) -> canonical medium.
MEDIUM_WORDS = {
    "painting": "painting", "oil": "oil", "watercolor": "watercolor", "ink": "ink",
    "acrylic": "acrylic", "gouache": "gouache", "guache": "gouache", "pastel": "pastel",
    "pastels": "pastel", "charcoal": "charcoal", "pencil": "pencil", "chalk": "chalk",
    "tempera": "tempera", "photography": "photography", "sculpture": "sculpture",
    "marble": "marble", "lithography": "lithography", "woodcut": "woodcut",
    "woodblock print": "woodblock print", "engraving": "engraving", "aquatint": "aquatint",
    "linocut": "linocut", "screen print": "screen print", "print": "print", "collage": "collage",
    "stained glass": "stained glass", "glas": "glass", "3d": "3d", "installation": "installation",
    "installation art": "installation", "light installation": "installation",
    "architecture": "architecture", "illustration": "illustration", "illstration": "illustration",
    "drawing": "drawing", "animation": "animation", "graphic design": "graphic design",
    "digital": "digital", "digital art": "digital", "textile": "textile", "film": "film",
    "comic": "comics", "comics": "comics", "manga": "manga", "graffiti": "graffiti",
    "grafitti": "graffiti", "poster": "poster", "industrial design": "industrial design",
    "fashion design": "fashion", "mosaic": "mosaic", "etching": "etching", "tattoo": "tattoo",
}
# Phrases of the clip-interrogator "mediums" list that are subjects or formats, not media.
NOT_MEDIUMS = frozenset(
    {"portrait", "character portrait", "still life", "picture", "diagram", "wireframe diagram",
     "screenshot", "jigsaw puzzle", "painting", "drawing", "sketch", "photo", "statue"}
)
# Spellings in the sources -> movement names of the clip-interrogator list.
MOVEMENT_ALIASES = {
    "pop-art": "pop art", "op-art": "op art", "psychedelic": "psychedelic art",
    "shin-hanga": "shin hanga", "moderism": "modernism", "informel": "art informel",
    "naive art primitivism": "naive art", "art nouveau modern": "art nouveau", "ukiyo e": "ukiyo-e",
    "mannerism late renaissance": "mannerism", "color field painting": "color field",
    "gothic": "gothic art", "concretism": "concrete art", "muralismo": "muralism",
}
# WikiArt styles beyond the clip-interrogator list, kept as movements.
EXTRA_MOVEMENTS = frozenset(
    {"early renaissance", "high renaissance", "northern renaissance", "contemporary realism",
     "new realism", "synthetic cubism", "analytical cubism", "muralism", "orientalism",
     "luminism", "social realism", "caravaggisti", "dutch golden age", "nihonga",
     "postmodernism", "storybook realism"}
)
# Links taken from free-text notes, which are checked against the years (see merge_records).
NOTE_LINK_KINDS = frozenset({"aka", "also", "misspelling", "actual-name", "also-tested"})

# Sources that write a bare surname as shorthand ("Monet", "Klimt"); a bare name in the
# curated sheets is a deliberate single name ("Raphael", "Ziraldo") and needs more proof.
SHORTHAND_SOURCES = frozenset({"clip-interrogator", "wikiart"})
