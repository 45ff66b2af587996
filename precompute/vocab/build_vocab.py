"""Regenerate `visual_concepts.txt`, the label vocabulary shipped with clipsae.

    .venv/bin/python precompute/vocab/build_vocab.py

Sources, all inside installed packages (no download): ImageNet-1k class names (OpenCLIP's
cleaned list), Kinetics-400 actions and COCO objects (torchvision weight metadata),
CIFAR-100 classes, and the hand-written lists below (scenes, colours, materials and
textures, styles, weather and light, people and attributes). Lower-cased, de-duplicated,
sorted.
"""

from pathlib import Path

CIFAR100 = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel
can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin
elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man
maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree
plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail
snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout
tulip turtle wardrobe whale willow_tree wolf woman worm"""

SCENES = """airport terminal, alley, amusement park, apartment building, aquarium, arch, art gallery, art studio,
attic, auditorium, bakery, balcony, ballroom, bamboo forest, bank vault, bar, barn, baseball field, basement,
basketball court, bathroom, beach, beach house, bedroom, beer hall, boardwalk, boat deck, bookstore, botanical
garden, bowling alley, boxing ring, bridge, building facade, bullring, bus station, butcher shop, cafeteria,
campsite, campus, canal, candy store, canyon, car interior, carousel, casino, castle, catacomb, cathedral, cave,
cemetery, chalet, church interior, city street, classroom, clean room, cliff, closet, clothing store, coast,
cockpit, coffee shop, computer room, conference room, construction site, corn field, corridor, cottage, courthouse,
courtyard, creek, crosswalk, dam, delicatessen, department store, desert, desert road, diner, dining room, dock,
dorm room, downtown, driveway, drugstore, elevator, embassy, engine room, escalator, excavation, factory, fairway,
farm, fastfood restaurant, field road, fire escape, fire station, fishpond, flea market, florist shop, food court,
football field, forest path, forest road, formal garden, fountain, galley, garage, gas station, gazebo, general
store, gift shop, glacier, golf course, greenhouse, grotto, gymnasium, hangar, harbor, hardware store, hayfield,
heliport, highway, home office, home theater, hospital, hospital room, hot spring, hotel room, house, hunting
lodge, ice cream parlor, ice floe, ice rink, ice shelf, iceberg, igloo, industrial area, inn, islet, jacuzzi, jail
cell, japanese garden, jewelry shop, junkyard, kasbah, kennel, kindergarten classroom, kitchen, lagoon, lake,
landfill, landing deck, laundromat, lawn, lecture room, library, lighthouse, living room, loading dock, lobby, lock
chamber, locker room, mansion, marsh, martial arts gym, mausoleum, medina, mezzanine, moat, mosque, motel,
mountain, mountain path, mountain snowy, movie theater, museum, music studio, natural history museum, nursery,
nursing home, oast house, ocean, office, office building, office cubicles, oilrig, operating room, orchard,
orchestra pit, pagoda, palace, pantry, park, parking garage, parking lot, pasture, patio, pavilion, pet shop,
pharmacy, phone booth, physics laboratory, picnic area, pier, pizzeria, playground, playroom, plaza, pond, porch,
promenade, pub, racecourse, raceway, raft, railroad track, rainforest, reception, recreation room, repair shop,
residential neighborhood, restaurant, restaurant kitchen, rice paddy, river, rock arch, roof garden, rope bridge,
ruin, runway, sandbox, sauna, schoolhouse, science museum, server room, shed, shoe shop, shopfront, shopping mall,
shower, ski resort, ski slope, sky, skyscraper, slum, snowfield, soccer field, stable, stadium, stage, staircase,
storage room, street market, subway station, supermarket, sushi bar, swamp, swimming hole, swimming pool,
synagogue, television studio, temple, throne room, ticket booth, topiary garden, tower, toyshop, train interior,
train station, tree farm, tree house, trench, tundra, underwater, utility room, valley, vegetable garden,
veterinarian office, viaduct, village, vineyard, volcano, volleyball court, waiting room, water park, water tower,
waterfall, watering hole, wave, wet bar, wheat field, wind farm, windmill, yard, youth hostel, zen garden"""

COLOURS = """red, orange, yellow, green, blue, purple, pink, brown, black, white, gray, beige, turquoise, teal,
navy, maroon, olive, gold, silver, bronze, cyan, magenta, lavender, crimson, pastel colors, neon colors,
monochrome, black and white, sepia, vivid colors, muted colors, warm colors, cool colors, rainbow colors"""

MATERIALS = """wood, metal, glass, plastic, stone, brick, concrete, marble, granite, sand, clay, ceramic,
porcelain, paper, cardboard, fabric, cotton, wool, silk, denim, leather, fur, feathers, scales, rubber, rust,
chrome, steel, copper, ice, snow, water, fire, smoke, steam, mud, dirt, gravel, grass, moss, leaves, bark,
straw, wicker, lace, velvet, knitted wool, stripes, polka dots, checkered pattern, plaid, zigzag pattern,
floral pattern, geometric pattern, camouflage, honeycomb, grid, dots, spirals, waves pattern, cracks, bubbles,
reflections, shadows, rough texture, smooth texture, shiny surface, matte surface, transparent, translucent,
glowing, sparkling, blurry, sharp focus, grainy, noisy, pixelated, high contrast, low contrast"""

STYLES = """photograph, close-up photo, macro photo, aerial photo, satellite image, panorama, portrait, selfie,
group photo, landscape photo, street photography, studio photo, product photo, food photography, wildlife
photography, underwater photo, night photo, long exposure, motion blur, bokeh, fisheye lens, tilt-shift, x-ray,
microscope image, infrared photo, thermal image, medical scan, astronomical image, screenshot, diagram, chart,
map, text, document, handwriting, sign, logo, icon, cartoon, comic, anime, manga, illustration, drawing, sketch,
pencil drawing, charcoal drawing, ink drawing, watercolor painting, oil painting, acrylic painting, fresco,
mosaic, stained glass, graffiti, mural, poster, collage, pixel art, 3d render, cgi, video game, low poly,
vector art, clip art, embroidery, origami, sculpture, statue, relief carving, tattoo, minimalism, abstract art,
surrealism, impressionism, pop art, art deco, baroque, gothic, vintage photo, retro style, futuristic,
steampunk, cyberpunk, fantasy art, still life, blueprint, calligraphy, children's drawing"""

WEATHER = """sunny, cloudy, overcast, rainy, stormy, foggy, misty, snowy, windy, lightning, rainbow, sunrise,
sunset, dusk, dawn, night, starry sky, moonlight, golden hour, blue hour, midday sun, backlight, silhouette,
spotlight, candlelight, neon lights, fireworks, aurora, haze, hail, frost, heat"""

PEOPLE = """person, people, crowd, child, baby, toddler, teenager, adult, elderly person, man, woman, boy,
girl, family, couple, friends, bride, groom, soldier, police officer, firefighter, doctor, nurse, chef, waiter,
farmer, worker, athlete, dancer, musician, singer, guitarist, drummer, painter, student, teacher, tourist,
hiker, cyclist, runner, swimmer, surfer, skier, skateboarder, climber, fisherman, businessman, clown, nun,
priest, monk, king, queen, knight, astronaut, pilot, sailor, cowboy, face, eyes, mouth, smile, hands, feet,
hair, beard, long hair, short hair, blond hair, glasses, sunglasses, hat, helmet, mask, uniform, suit, dress,
wedding dress, t-shirt, jeans, shorts, skirt, coat, scarf, shoes, boots, jewelry, necklace, earrings,
backpack, handbag, umbrella, tattooed arm, makeup, costume, crying, laughing, shouting, sleeping, eating,
drinking, reading, writing, cooking, talking on the phone, taking a photo, hugging, kissing, waving, pointing,
sitting, standing, walking, running, jumping, lying down, dancing, playing, fighting, praying, shopping,
working, driving, riding a bike, riding a horse, swimming, climbing, fishing, gardening, painting a picture,
playing guitar, playing piano, playing soccer, playing basketball, playing tennis, playing cards, doing yoga"""


def collect() -> list[str]:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
    from torchvision.models import detection, video

    words = list(IMAGENET_CLASSNAMES)
    words += [
        c
        for c in detection.FasterRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"]
        if c not in ("__background__", "N/A")
    ]
    words += video.R3D_18_Weights.DEFAULT.meta["categories"]
    words += [w.replace("_", " ") for w in CIFAR100.split()]
    for block in (SCENES, COLOURS, MATERIALS, STYLES, WEATHER, PEOPLE):
        words += [w.strip() for w in block.replace("\n", " ").split(",")]
    return sorted({w.strip().lower() for w in words if w.strip()})


if __name__ == "__main__":
    out = Path(__file__).with_name("visual_concepts.txt")
    words = collect()
    out.write_text("\n".join(words) + "\n")
    print(f"{len(words)} concepts -> {out}")
