// A 4x4 box filter from four bilinear taps around uv (for the bloom's downsampling).
vec3 box4(sampler2D source, vec2 uv) {
    vec2 t = 1.0 / vec2(textureSize(source, 0));
    return 0.25 * (texture(source, uv + t * vec2(-1.0, -1.0)).rgb + texture(source, uv + t * vec2(1.0, -1.0)).rgb
                 + texture(source, uv + t * vec2(-1.0, 1.0)).rgb + texture(source, uv + t * vec2(1.0, 1.0)).rgb);
}
