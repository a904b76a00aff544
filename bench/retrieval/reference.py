"""Reference sentences for the local embedder's language centroids (plugins/embedders.py, ``E5Small``).

Generic everyday sentences written for this purpose, each in English and in Chinese with the same
meaning, about nothing in the evaluation's documents, memories or questions: the difference of the
two languages' mean vectors is then the language alone, not a topic.
"""
from __future__ import annotations

PAIRS: list[tuple[str, str]] = [
    ("It rained all morning, so we stayed inside and read.", "早上一直在下雨，所以我们待在屋里看书。"),
    ("The bakery on the corner sells fresh bread before seven.", "街角的面包店七点前就卖新鲜面包。"),
    ("My grandmother grows tomatoes and peppers in her garden.", "我奶奶在她的菜园里种西红柿和辣椒。"),
    ("The train was twenty minutes late because of the snow.", "因为下雪，火车晚点了二十分钟。"),
    ("He learned to ride a bicycle when he was five.", "他五岁的时候学会了骑自行车。"),
    ("Please close the window, it is getting cold.", "请把窗户关上，天越来越冷了。"),
    ("The museum is closed on Mondays.", "博物馆周一闭馆。"),
    ("She plays the violin in a small orchestra.", "她在一个小乐团里拉小提琴。"),
    ("We watched the sunset from the top of the hill.", "我们在山顶上看日落。"),
    ("The soup needs a little more salt.", "这汤还需要再放一点盐。"),
    ("Our neighbours have two dogs and a parrot.", "我们的邻居养了两只狗和一只鹦鹉。"),
    ("The library lends books for three weeks.", "图书馆的书可以借三个星期。"),
    ("I usually walk to the market on Saturday.", "我周六通常走路去市场。"),
    ("The football match ended in a draw.", "那场足球比赛打成了平局。"),
    ("The river freezes in the middle of winter.", "到了隆冬，河面就结冰了。"),
    ("He forgot his umbrella on the bus.", "他把伞忘在公交车上了。"),
    ("The children built a snowman in the yard.", "孩子们在院子里堆了一个雪人。"),
    ("This mountain road is narrow and has many curves.", "这条山路又窄又多弯。"),
    ("Fresh fruit is cheaper in summer.", "夏天的新鲜水果更便宜。"),
    ("My brother is studying medicine at university.", "我哥哥在大学里学医。"),
    ("The old bridge was repaired last year.", "那座老桥去年修好了。"),
    ("She writes a letter to her parents every month.", "她每个月给父母写一封信。"),
    ("The restaurant was full, so we waited outside.", "餐厅坐满了，所以我们在外面等。"),
    ("Birds fly south when autumn comes.", "秋天一到，鸟儿就往南飞。"),
    ("The concert starts at eight in the evening.", "音乐会晚上八点开始。"),
    ("I need to buy new shoes before the trip.", "出发前我得买一双新鞋。"),
    ("The teacher asked the students to read the first chapter.", "老师让学生们读第一章。"),
    ("A cup of hot tea helps when you have a cold.", "感冒的时候喝杯热茶会舒服一些。"),
    ("The village is famous for its peaches.", "这个村子以桃子出名。"),
    ("They painted the kitchen a light yellow.", "他们把厨房刷成了淡黄色。"),
    ("The baby finally fell asleep after midnight.", "宝宝过了午夜终于睡着了。"),
    ("We lost our way in the forest and used a compass.", "我们在森林里迷了路，只好用指南针。"),
    ("The price of eggs went up this month.", "这个月鸡蛋涨价了。"),
    ("He runs five kilometres every morning.", "他每天早上跑五公里。"),
    ("The lake is deep and very clear.", "这个湖很深，水也很清。"),
    ("My phone battery is almost empty.", "我的手机快没电了。"),
    ("The festival lasts for three days.", "这个节日要过三天。"),
    ("She is afraid of spiders.", "她怕蜘蛛。"),
    ("The farmer sells milk and cheese at the fair.", "那位农民在集市上卖牛奶和奶酪。"),
    ("Turn left at the second traffic light.", "在第二个红绿灯左转。"),
    ("The hotel room had a view of the sea.", "酒店房间能看到海。"),
    ("Our flight was cancelled because of the storm.", "因为暴风雨，我们的航班取消了。"),
    ("The cat sleeps on the sofa all afternoon.", "猫整个下午都在沙发上睡觉。"),
    ("He cooked noodles with vegetables for dinner.", "他晚饭做了蔬菜面条。"),
    ("The streets are quiet early on Sunday.", "星期天一大早街上很安静。"),
    ("I will call you when I arrive at the station.", "我到车站的时候给你打电话。"),
    ("The painting shows a boat on a calm sea.", "这幅画画的是平静海面上的一条船。"),
    ("Leaves turn red and gold in October.", "十月里树叶变成了红色和金色。"),
]

# The memory merge threshold (memory_dedup_threshold): one fact said twice, and a fact with its update.
RESTATEMENTS: list[tuple[str, str]] = [
    ("Tom's sister is a nurse in Boston.", "Tom's sister works as a nurse in Boston."),
    ("The user prefers short answers.", "The user likes answers to be short."),
    ("Anna's dog is a black labrador called Max.", "Anna has a black labrador named Max."),
    ("The office Wi-Fi password changes every month.", "The Wi-Fi password of the office is changed monthly."),
    ("Paul is vegetarian.", "Paul does not eat meat; he is a vegetarian."),
    ("The team ships a release every two weeks.", "A new release ships every second week."),
    ("Maria studies law in Madrid.", "Maria is a law student in Madrid."),
    ("The printer on the third floor is broken.", "The third-floor printer does not work."),
]
UPDATES: list[tuple[str, str]] = [
    ("Tom's sister lives in Boston.", "Tom's sister moved from Boston to Chicago."),
    ("The user prefers short answers.", "The user now wants detailed answers with examples."),
    ("The team ships a release every two weeks.", "The team now ships a release every month."),
    ("Paul is vegetarian.", "Paul started eating fish again."),
]
