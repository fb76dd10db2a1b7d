#version 330 core
flat in vec2 v_decks;
out vec4 f_field;

void main() {
    f_field = vec4(v_decks * max(1.0 - length(gl_PointCoord * 2.0 - 1.0), 0.0), 0.0, 1.0);
}
